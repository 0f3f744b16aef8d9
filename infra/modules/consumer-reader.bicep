// certrenew — Reader on one subscription listed in CONSUMER_SUBSCRIPTIONS, for the app's identity: what Azure
// Resource Graph needs to show discover_consumers the resources that reference the vault's certificates. Nothing
// more: Reader cannot change a resource or read a secret.

targetScope = 'subscription'

@description('Principal id of the app\'s user-assigned identity.')
param principalId string

// Reader (built-in role).
var roleReader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, roleReader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleReader)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
