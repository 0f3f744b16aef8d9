// certrenew — an Azure Monitor workbook over the app's custom events (issue 14): certificates by days left, renewals
// and failures by reason over time, pending renewals. The workbook's content is workbook.json (its queries are
// checked offline with those of docs/, tests/infra/test_kql.py).

param location string
param tags object

@description('Resource id of the Application Insights component the workbook queries.')
param appInsightsId string

@description('Display name of the workbook.')
param displayName string = 'certrenew: certificates and renewals'

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, appInsightsId, 'certrenew-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: loadTextContent('workbook.json')
    version: 'Notebook/1.0'
  }
}

output workbookId string = workbook.id
