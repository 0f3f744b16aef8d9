// certrenew — one more vault the app writes to (issue 25), deployed into the
// vault's own resource group (possibly another subscription's).
//
// A new vault (create: true) is made like the app's own; an existing one is
// only referenced. Either way the app's identity and RCL's Key Vault identity
// get Key Vault Certificates Officer on it (nothing more: the app's secrets
// stay in its own vault), and the vault gets its Event Grid system topic in
// its resource group (where Event Grid puts a source's system topic). The
// topic's subscription is keyvault-extra-events.bicep, made after the topic's
// identity may write to the dead-letter container.

param location string
param tags object

@description('Name of the vault (the first label of its URL).')
param keyVaultName string

@description('Create the vault (true) or use an existing one (false).')
param create bool

@allowed([
  'default'
  'recover'
])
@description('As the app\'s own vault: \'recover\' brings back a vault this template made, soft-deleted by azd down.')
param keyVaultCreateMode string = 'default'

@description('Principal id of the app\'s managed identity.')
param appPrincipalId string

@description('Principal id of the identity whose Key Vault token RCL acts with.')
param rclPrincipalId string

var roleKeyVaultCertificatesOfficer = 'a4417e6f-fecd-4de8-b567-7b0420556985'

resource newVault 'Microsoft.KeyVault/vaults@2023-07-01' = if (create) {
  // checkov:skip=CKV_AZURE_109: As the app's own vault: the Flex Consumption app has no VNet integration, so its SDK calls come from public App Service outbound IPs; access is governed by Entra ID RBAC only.
  // checkov:skip=CKV_AZURE_189: Same reason as CKV_AZURE_109: the app reaches the vault over its public endpoint.
  // checkov:skip=CKV_AZURE_110: enablePurgeProtection is true below; checkov does not read the properties of a conditional (if (create)) resource (without the condition these checks pass).
  // checkov:skip=CKV_AZURE_42: enableSoftDelete and enablePurgeProtection are true below; same checkov limitation as CKV_AZURE_110.
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    createMode: keyVaultCreateMode
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appCertificatesOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, roleKeyVaultCertificatesOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleKeyVaultCertificatesOfficer)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    newVault
  ]
}

resource rclCertificatesOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, rclPrincipalId, roleKeyVaultCertificatesOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleKeyVaultCertificatesOfficer)
    principalId: rclPrincipalId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    newVault
  ]
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: 'evgt-${keyVaultName}'
  location: create ? location : vault.location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: vault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
  dependsOn: [
    newVault
  ]
}

output vaultUri string = vault.properties.vaultUri
output systemTopicName string = systemTopic.name
output systemTopicPrincipalId string = systemTopic.identity.principalId
